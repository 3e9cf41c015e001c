with

source as (

    select * from {{ source('audit', 'rejected_rows') }}

),

final as (

    select
        run_id,
        stage,
        line_number,
        identifier,
        severity,
        rule,
        message,
        column_name,
        value as cell_value

    from source

)

select * from final
